@echo off
rem charframe merge --preset FACE: drop LoRA files here: block-weight merge with the FACE preset
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" merge --preset FACE %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe merge --preset FACE stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
