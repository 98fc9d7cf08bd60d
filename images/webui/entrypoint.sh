#!/bin/sh
# Checks the settings Open WebUI cannot run without, reads the secrets from files, then
# starts Open WebUI (`open-webui serve`) on 0.0.0.0:$PORT. A missing setting stops the
# container here, with its name, instead of Open WebUI quietly making do: it would
# generate a secret key into the container (every session lost at the next start) and
# talk to api.openai.com when no LLM URL is given.
set -eu

fail() {
  echo "webui: $*" >&2
  exit 64
}

# VAR_FILE -> VAR, for each secret: the file's content without its trailing newline.
# A value given in VAR itself wins (and the file is not read).
for var in WEBUI_SECRET_KEY OPENAI_API_KEY OPENAI_API_KEYS AUDIO_TTS_OPENAI_API_KEY \
           WEBUI_ADMIN_PASSWORD; do
  file=$(printenv "${var}_FILE" || true)
  [ -n "$file" ] || continue
  if [ -n "$(printenv "$var" || true)" ]; then
    if [ -e "$file" ]; then
      echo "webui: $var is set, so ${var}_FILE ($file) is not read" >&2
    fi
    continue
  fi
  if [ ! -f "$file" ]; then
    if [ "$var" = WEBUI_SECRET_KEY ]; then
      fail "no secret key: WEBUI_SECRET_KEY_FILE=$file does not exist; mount a file" \
           "there holding a long random string, e.g. from \`openssl rand -hex 32\`"
    fi
    fail "${var}_FILE=$file: no such file (mount the secret there)"
  fi
  [ -r "$file" ] || fail "${var}_FILE=$file: not readable by uid $(id -u)"
  value=$(cat "$file")
  [ -n "$value" ] || fail "${var}_FILE=$file is empty"
  export "$var=$value"
done

if [ -z "${WEBUI_SECRET_KEY:-}" ]; then
  fail "no secret key: set WEBUI_SECRET_KEY_FILE to a file holding a long random" \
       "string (the image's default is /run/secrets/webui_secret_key)"
fi
if [ "${#WEBUI_SECRET_KEY}" -lt 32 ]; then
  fail "the secret key is ${#WEBUI_SECRET_KEY} characters long: use at least 32"
fi

# Open WebUI takes a 44-character key for a Fernet key as it is (OAuth session tokens,
# OAUTH_SESSION_TOKEN_ENCRYPTION_KEY's default) and crashes at start-up on one that is
# not; any other length it hashes into one.
if [ "${#WEBUI_SECRET_KEY}" -eq 44 ] && [ -z "${OAUTH_SESSION_TOKEN_ENCRYPTION_KEY:-}" ] \
   && ! python3 -c 'import os; from cryptography.fernet import Fernet; Fernet(os.environ["WEBUI_SECRET_KEY"])' 2>/dev/null; then
  fail "the secret key is 44 characters long but not a Fernet key (url-safe base64 of" \
       "32 bytes), which Open WebUI cannot start with: use another length, e.g." \
       "\`openssl rand -hex 32\`"
fi

urls=${OPENAI_API_BASE_URLS:-${OPENAI_API_BASE_URL:-}}
[ -n "$urls" ] || fail "no LLM: set OPENAI_API_BASE_URL to its OpenAI-compatible" \
                       "API, e.g. http://llm:8080/v1"
# Open WebUI separates several connections with ';'.
old_ifs=$IFS
IFS=';'
for url in $urls; do
  case $url in
    http://?*|https://?*) ;;
    *) fail "OPENAI_API_BASE_URL(S): '$url' is not an http(s):// URL" ;;
  esac
done
IFS=$old_ifs

if [ "${AUDIO_TTS_ENGINE:-}" = openai ]; then
  case ${AUDIO_TTS_OPENAI_API_BASE_URL:-} in
    http://?*|https://?*) ;;
    "") fail "AUDIO_TTS_ENGINE=openai needs AUDIO_TTS_OPENAI_API_BASE_URL, the TTS" \
             "server's OpenAI-compatible API (e.g. http://kokoro:8880/v1); without it" \
             "Open WebUI would send the speech to the LLM's URL" ;;
    *) fail "AUDIO_TTS_OPENAI_API_BASE_URL: '$AUDIO_TTS_OPENAI_API_BASE_URL' is not" \
            "an http(s):// URL" ;;
  esac
fi

[ -d "$DATA_DIR" ] && [ -w "$DATA_DIR" ] \
  || fail "DATA_DIR=$DATA_DIR is not a writable folder for uid $(id -u) (mount a volume)"

exec open-webui serve --host 0.0.0.0 --port "${PORT:-8080}" "$@"
