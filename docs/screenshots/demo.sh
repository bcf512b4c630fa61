#!/usr/bin/env bash
# Rebuild the console screenshots: a throwaway gaiaorch (fake GPUs, real Docker, SQLite in /tmp),
# a few leases through the API, a handoff started from the console's own form, then Chromium.
# Usage: docs/screenshots/demo.sh   (needs chromium: apt-get install -y chromium)
set -euo pipefail
cd "$(dirname "$0")/../.."
DEMO=$(mktemp -d /tmp/gaiaorch-console-demo.XXXX)
PORT=$(python3 -c "import socket;s=socket.socket();s.bind(('127.0.0.1',0));print(s.getsockname()[1])")
B=http://127.0.0.1:$PORT
SHOTS=docs/screenshots
export GAIAORCH_VAR_DIR=$DEMO GAIAORCH_PORT=$PORT GAIAORCH_GPU_BACKEND=fake GAIAORCH_FAKE_GPU_FILE=$DEMO/gpus.json
cat >"$DEMO/gpus.json" <<'JSON'
{"gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3 (fake)", "total_mib": 81559, "used_mib": 62310},
          {"index": 1, "name": "NVIDIA H100 80GB HBM3 (fake)", "total_mib": 81559, "used_mib": 517}]}
JSON
setsid scripts/run >"$DEMO/server.log" 2>&1 </dev/null &
SERVER=$!
setsid .venv/bin/python $SHOTS/fake_gaia.py "$DEMO/gpus.json" 300 >"$DEMO/fakes.log" 2>&1 &
FAKES=$!
trap 'kill -TERM -$SERVER $FAKES 2>/dev/null || true' EXIT
until curl -sf "$B/health" >/dev/null; do sleep 1; done

token() { .venv/bin/python manage.py service_account "$1" --rotate 2>/dev/null | tail -1; }  # a key shows once: mint a fresh one
acquire() { curl -sf -X POST "$B/gpu/acquire" -H "Authorization: Token $(token "$1")" -H 'Content-Type: application/json' -d "$2" >/dev/null || true; }
acquire gaia-core '{"requester": "gaia-core", "reason": "Prime serving chat (vLLM)"}'
acquire gaia-study '{"requester": "gaia-study", "reason": "nightly LoRA training", "memory_mib": 40000}'
acquire gaia-core-candidate '{"requester": "gaia-core-candidate", "reason": "candidate smoke test", "priority": 5}'
acquire gaia-web '{"requester": "gaia-web", "reason": "embedding batch", "gpu": 1, "ttl_seconds": 600}'
curl -sf -X POST "$B/notify/oracle-fallback" -H "Authorization: Token $(token gaia-core)" -H 'Content-Type: application/json' \
  -d '{"fallback_model": "gpt-4o", "original_role": "prime", "reason": "Prime unavailable during restart"}' >/dev/null

SESSION=$(.venv/bin/python manage.py shell -c "
from django.contrib.auth import get_user_model, SESSION_KEY, BACKEND_SESSION_KEY, HASH_SESSION_KEY
from django.contrib.sessions.backends.db import SessionStore
user = get_user_model().objects.filter(is_superuser=True).first()
session = SessionStore()
session.update({SESSION_KEY: str(user.pk), BACKEND_SESSION_KEY: 'django.contrib.auth.backends.ModelBackend', HASH_SESSION_KEY: user.get_session_auth_hash()})
session.create()
print(session.session_key)" 2>/dev/null | tail -1)
shot() { .venv/bin/python $SHOTS/capture.py "$B" "$SESSION" "$SHOTS/$1" "$2" "${3:-3}" "${4:-}"; }

shot admin-index.png /admin/ 1
shot confirm-revoke.png "/admin/dashboard/action/revoke-lease?lease_id=$(curl -s -b "sessionid=$SESSION" "$B/admin/dashboard/feed" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["gpu"]["gpus"][1]["lease_id"])')" 2

# Start prime_to_study through the console's confirmation form, as an operator's browser would.
JAR=$DEMO/cookies
printf '127.0.0.1\tFALSE\t/\tFALSE\t0\tsessionid\t%s\n' "$SESSION" >"$JAR"
FORM="$B/admin/dashboard/action/start-handoff?type=prime_to_study"
CSRF=$(curl -s -c "$JAR" -b "$JAR" "$FORM" | grep -o 'name="csrfmiddlewaretoken" value="[^"]*"' | head -1 | sed 's/.*value="//;s/"$//')
curl -s -b "$JAR" -X POST "$FORM" -d "csrfmiddlewaretoken=$CSRF&type=prime_to_study&gpu=0&reason=nightly+LoRA+training+run" -o /dev/null
sleep 10
shot dashboard.png /admin/dashboard/ 3
# A refusal, submitted in the browser: the handoff still runs, so a second one is refused (409).
shot dashboard-refusal.png "/admin/dashboard/action/start-handoff?type=prime_to_study" 2 \
  "document.getElementById('id_reason').value = 'once more'; document.getElementById('console-confirm').submit();"
echo "screenshots in $SHOTS; server log in $DEMO/server.log"
