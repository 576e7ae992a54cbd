@echo off
rem charframe run: drop character files (Characters/krnk.toml) or group files here: runs their stages, only what is stale
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" run %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe run stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
