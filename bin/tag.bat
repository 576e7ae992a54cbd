@echo off
rem charframe tag: drop dataset folders here: writes a caption .txt beside every coded image
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" tag %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe tag stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
