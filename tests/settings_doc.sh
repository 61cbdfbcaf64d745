#!/bin/bash
# The README's settings table against the settings the agent knows
# (`vmckptd --settings`, from cfg.c's one table): every setting is there, and
# a row of one setting gives its default. Prints TAP.
# Usage: tests/settings_doc.sh BUILD_DIR
set -u
cd "$(dirname "$0")/.."
B=${1:-build/san}
n=0; bad=()
while read -r k def; do
    s=${k%%.*}; key=${k#*.}; n=$((n + 1))
    row=$(grep -m1 "^| \`\[$s\] $key\`" README.md)
    if [ -z "$row" ]; then
        grep -q "\`\[$s\] $key\`\|\[$s\] .*\`$key\`" README.md || bad+=("$k: not in the README")
        continue
    fi
    [ "$def" = - ] && continue
    col=$(echo "$row" | awk -F'|' '{print $3}')
    echo "$col" | grep -q "\`$def\`" || bad+=("$k: default $def, the README says$col")
done < <("$B/vmckptd" --settings)
if [ "$n" -gt 0 ] && [ ${#bad[@]} -eq 0 ]; then
    echo "ok 1 - the README's settings table names all $n settings with their defaults"
else
    echo "not ok 1 - the README's settings table names all settings with their defaults"
    for b in "${bad[@]}"; do echo "#   $b"; done
    [ "$n" -gt 0 ] || echo "#   vmckptd --settings printed nothing"
fi
echo "1..1"
