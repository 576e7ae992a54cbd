@echo off
rem charframe watch --train: drop the project folder here: prepares changed datasets and runs changed characters until closed
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" watch --train %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe watch --train stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
