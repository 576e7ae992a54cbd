@echo off
rem charframe rerun --all: drop the project folder here: reruns what changed for every character, then a summary table
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" rerun --all %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe rerun --all stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
