# dwasync %post: state directory, credentials directory, units; an upgrade ($1 > 1)
# restarts running instances.
install -d -o dwasync -g dwasync -m 0700 /var/lib/dwasync
install -d -o root -g root -m 0700 /etc/dwasync/credentials
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -gt 1 ]; then
        systemctl try-restart dwasync.service 'dwasync@*.service' >/dev/null 2>&1 || :
    fi
fi
exit 0
