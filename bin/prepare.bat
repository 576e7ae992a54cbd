@echo off
rem charframe prepare: drop dataset folders here: captions, then the dataset TOML of each
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" prepare %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe prepare stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
