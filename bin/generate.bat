@echo off
rem charframe generate: drop character files or a project folder here: generates the face set candidates
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" generate %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe generate stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
