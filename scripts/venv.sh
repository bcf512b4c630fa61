# Sourced by scripts/run and scripts/test: create .venv and install a requirements file once
# per change of that file.
ensure_venv() {
  local requirements=$1 stamp
  [ -x .venv/bin/python ] || python3 -m venv .venv
  stamp=".venv/.installed-$(basename "$requirements")"
  if [ ! -f "$stamp" ] || [ -n "$(find requirements*.txt -newer "$stamp")" ]; then
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -r "$requirements"
    touch "$stamp"
  fi
}
