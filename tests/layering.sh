#!/bin/bash
# The library's dependency order, checked: a module may include only the
# headers of modules in lower layers (the base layer's modules may include
# each other). The layers are the README's "Code layout", lowest first; a
# file store_X.c belongs to module store, ckpt_X.c to ckpt. Prints TAP.
# Usage: tests/layering.sh [LIB_DIR]   (default lib)
#        tests/layering.sh --self-test  (a back-edge added to a copy must fail)
set -u
cd "$(dirname "$0")/.."
LAYERS=(
    "err log util testhook stream bufpool beneath"
    "uri qmp chunk codec manifest api peer img"
    "store vm"
    "pack catalog cluster"
    "repo"
    "ckpt"
    "cfg automode gc restart interval prestage protect runlog memkeep"
    "task"
    "failover"
    "agent"
)

module_of() { # module_of FILE
    local m; m=$(basename "$1"); m=${m%.*}
    case $m in store_*) m=store ;; ckpt_*) m=ckpt ;; esac
    echo "$m"
}
layer_of() { # layer_of MODULE: its layer's index, or nothing
    local i
    for i in "${!LAYERS[@]}"; do
        case " ${LAYERS[$i]} " in *" $1 "*) echo "$i"; return ;; esac
    done
}

check() { # check LIB_DIR: prints one line per back-edge; fails if any
    local dir=$1 f m lm d ld bad=0
    for f in "$dir"/*.c "$dir"/*.h; do
        m=$(module_of "$f"); lm=$(layer_of "$m")
        if [ -z "$lm" ]; then echo "$f: module $m is in no layer"; bad=1; continue; fi
        for d in $(sed -n 's/^#include "\([a-z_]*\)\.h".*/\1/p' "$f"); do
            d=$(module_of "$d.h"); [ "$d" = "$m" ] && continue
            ld=$(layer_of "$d")
            if [ -z "$ld" ]; then echo "$f: includes $d.h, a module in no layer"; bad=1
            elif [ "$ld" -gt "$lm" ] || { [ "$ld" -eq "$lm" ] && [ "$lm" -ne 0 ]; }; then
                echo "$f: $m (layer $lm) includes $d.h (layer $ld): against the order"; bad=1
            fi
        done
    done
    return $bad
}

if [ "${1:-}" = --self-test ]; then
    tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
    cp lib/*.c lib/*.h "$tmp/"
    if check "$tmp" >/dev/null; then echo "ok 1 - the library as it is passes"; else echo "not ok 1 - the library as it is passes"; fi
    sed -i '1a #include "agent.h"' "$tmp/store_dir.c"
    out=$(check "$tmp")
    if [ $? -ne 0 ] && echo "$out" | grep -q "store_dir.c: store (layer 2) includes agent.h"; then
        echo "ok 2 - a back-edge (store_dir.c including agent.h) is caught"
    else echo "not ok 2 - a back-edge (store_dir.c including agent.h) is caught"; fi
    echo "1..2"
    exit 0
fi
if out=$(check "${1:-lib}"); then
    echo "ok 1 - every include in ${1:-lib} follows the layer order"
else
    echo "not ok 1 - every include in ${1:-lib} follows the layer order"
    echo "$out" | sed 's/^/#   /'
fi
echo "1..1"
