@echo off
rem charframe toml: drop dataset folders here: writes the sd-scripts dataset TOML of each
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" toml %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe toml stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
