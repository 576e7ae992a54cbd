@echo off
rem charframe compress: drop LoRA files here: SVD-compresses each (suffix -SvR16)
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" compress %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe compress stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
