#!/usr/bin/env bash
# Bring up what the test suite talks to: PostgreSQL and Redis on 127.0.0.1 (used as they are when they answer,
# installed from Debian's packages and started otherwise) and Debian's Chromium for the browser tests.
set -euo pipefail
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
updated=0
apt_install() {
  if [ "$updated" = 0 ]; then $sudo apt-get update -qq; updated=1; fi
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for() {
  for _ in $(seq 1 60); do answers "$1" && return 0; sleep 0.5; done
  echo "error: nothing answers on 127.0.0.1:$1 ($2)" >&2; return 1
}

if ! answers 5432; then
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  $sudo pg_ctlcluster --skip-systemctl-redirect "$version" main start || $sudo pg_ctlcluster "$version" main start
  wait_for 5432 PostgreSQL
  # The suite connects as postgres/postgres over TCP; set that password (a no-op where auth is trust).
  as_postgres="sudo -u postgres"; [ "$(id -u)" = 0 ] && as_postgres="runuser -u postgres --"
  (cd /tmp && $as_postgres psql -qc "ALTER USER postgres PASSWORD 'postgres'") >/dev/null
fi

if ! answers 6379; then
  command -v redis-server >/dev/null || apt_install redis-server
  mkdir -p /tmp/culprit-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp/culprit-redis \
    --logfile /tmp/culprit-redis/redis.log
  wait_for 6379 Redis
fi

# The chaos tests start a PostgreSQL cluster and a Redis server of their own (to crash and restart them without
# disturbing the ones above), so the server programs must be here even when the services answer from elsewhere.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql
command -v redis-server >/dev/null || apt_install redis-server
command -v chromium >/dev/null || apt_install chromium
echo "services: PostgreSQL and Redis answer on 127.0.0.1; $(chromium --version 2>/dev/null || echo 'chromium missing')"
