# dwasync %preun: erasing the package ($1 = 0) stops every dwasync service.
if [ "$1" -eq 0 ] && [ -d /run/systemd/system ]; then
    systemctl stop dwasync.service 'dwasync@*.service' >/dev/null 2>&1 || :
fi
exit 0
