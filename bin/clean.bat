@echo off
rem charframe clean: drop character files (Characters/krnk.toml) or a project folder here: removes the backgrounds of the generated face candidates
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" clean %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe clean stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
