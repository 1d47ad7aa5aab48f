#!/bin/sh
# Runs a test program once per OpenCL device, with CLNORM_DEVICE set to that device's "P:D".
#   run-on-devices.sh CLNORM_INFO PROGRAM [ARGS...]
# CLNORM_TEST_DEVICES="0:0 1:0" limits the run to those devices.
info=$1
shift
devices=${CLNORM_TEST_DEVICES:-$("$info" --selectors)}
if [ -z "$devices" ]; then
    echo "run-on-devices: no OpenCL device found" >&2
    exit 1
fi
failed=0
for dev in $devices; do
    echo "=== $(basename "$1") on device $dev: $(CLNORM_DEVICE=$dev "$info" | sed -n '1s/^\[[0-9:]*\] //p') ==="
    CLNORM_DEVICE=$dev "$@" || failed=1
done
exit $failed
