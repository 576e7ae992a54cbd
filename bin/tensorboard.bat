@echo off
rem charframe tensorboard: drop the project folder here: TensorBoard on LoRALog (losses and preview grids)
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME=%~dp0..\.venv\Scripts\charframe.exe"
if not exist "%CHARFRAME%" set "CHARFRAME=charframe"
"%CHARFRAME%" tensorboard %*
set "RC=%ERRORLEVEL%"
if not "%RC%"=="0" (
  echo.
  echo charframe tensorboard stopped with exit code %RC%: see the messages above.
  pause
)
endlocal & exit /b %RC%
