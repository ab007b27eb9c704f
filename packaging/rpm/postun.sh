# dwasync %postun: RPM has no purge; erasing the package ($1 = 0) keeps /var/lib/dwasync
# and the credentials so an accidental erase loses nothing (remove them by hand).
if [ -d /run/systemd/system ]; then
    systemctl --system daemon-reload >/dev/null 2>&1 || :
fi
exit 0
