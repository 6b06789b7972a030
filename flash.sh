#!/usr/bin/env bash
# flash.sh: provision a site gateway from this checkout (docs/flashing.md).
# Provisioning is not built yet; this script refuses rather than pretend.
set -euo pipefail
echo "flash.sh: gateway provisioning is not implemented in this version of cabguard." >&2
echo "          Nothing was written. See docs/flashing.md once it exists." >&2
exit 1
