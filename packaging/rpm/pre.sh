# dwasync %pre: the system user.
getent group dwasync >/dev/null || groupadd -r dwasync
getent passwd dwasync >/dev/null || useradd -r -g dwasync -d /var/lib/dwasync -M \
    -s /sbin/nologin -c "dwasync dual-write" dwasync
exit 0
