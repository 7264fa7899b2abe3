#!/bin/sh
# The run's entry point inside the VM, started by /sbin/nfh-init (test/vm/image.sh) from
# the run's disk mounted at /nfh. Results go to /dev/ttyS1, everything else to the console.
exec python3 /nfh/vm/guest.py
