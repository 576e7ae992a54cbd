@echo off
rem charframe tag: drop dataset folders here: writes a caption .txt beside every coded image
rem Generated from bin/launchers.toml by `python bin/launchers.py`; do not edit.
setlocal
set "CHARFRAME="
set "REPO=%~dp0.."
if exist "%REPO%\.venv\Scripts\charframe.exe" set "CHARFRAME=%REPO%\.venv\Scripts\charframe.exe"
if not defined CHARFRAME if exist "%REPO%\venv\Scripts\charframe.exe" set "CHARFRAME=%REPO%\venv\Scripts\charframe.exe"
if not defined CHARFRAME if defined VIRTUAL_ENV if exist "%VIRTUAL_ENV%\Scripts\charframe.exe" set "CHARFRAME=%VIRTUAL_ENV%\Scripts\charframe.exe"
if not defined CHARFRAME if defined CONDA_PREFIX if exist "%CONDA_PREFIX%\Scripts\charframe.exe" set "CHARFRAME=%CONDA_PREFIX%\Scripts\charframe.exe"
if not defined CHARFRAME for %%P in (charframe.exe) do if not "%%~$PATH:P"=="" set "CHARFRAME=%%~$PATH:P"
if not defined CHARFRAME goto notfound
"%CHARFRAME%" tag %*
set "RC=%ERRORLEVEL%"
if "%RC%"=="0" goto end
echo.
echo charframe tag stopped with exit code %RC%: see the messages above.
pause
goto end
:notfound
echo charframe tag: charframe is not installed where this launcher looks. Tried:
echo   %REPO%\.venv\Scripts\charframe.exe
echo   %REPO%\venv\Scripts\charframe.exe
echo   the active virtual environment (VIRTUAL_ENV=%VIRTUAL_ENV%)
echo   the active conda environment (CONDA_PREFIX=%CONDA_PREFIX%)
echo   charframe.exe on PATH
echo Install it into %REPO%\.venv as the README says (Set-up, Windows), or activate the environment
echo that has it and start this launcher from that console.
set "RC=9009"
pause
:end
endlocal & exit /b %RC%
