# Sourced by the scripts: make .venv (Python 3.11+) and install Citadel with its test tools into it.
VENV="${CITADEL_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  echo "creating the virtual environment $VENV with $("$PYTHON" --version 2>&1)" >&2
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
fi
# Re-install only when the project's dependencies changed.
stamp="$VENV/.citadel-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "installing Citadel and its dependencies (Prefect, Qdrant client, ...) into $VENV: about a minute, once; log in $VENV/install.log" >&2
  if ! "$VENV/bin/pip" install -q -e '.[test]' >"$VENV/install.log" 2>&1; then
    cat "$VENV/install.log" >&2
    echo "installing Citadel into $VENV failed (log above)" >&2
    exit 1
  fi
  touch "$stamp"
  echo "installed" >&2
fi
export PATH="$PWD/$VENV/bin:$PATH"
