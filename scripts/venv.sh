# Sourced by the scripts: make .venv (Python 3.11+) and install Citadel with its test tools into it.
VENV="${CITADEL_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# Re-install only when the project's dependencies changed.
stamp="$VENV/.citadel-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  "$VENV/bin/pip" install -q -e '.[test]'
  touch "$stamp"
fi
export PATH="$PWD/$VENV/bin:$PATH"
