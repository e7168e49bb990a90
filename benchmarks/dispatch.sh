# Sourced at the end of every group's run.sh (after its entry functions): no argument lists the entries
# (each `name() { # what it measures` line of the sourcing script), `all` runs them in order, and every name
# is checked before anything runs. The sourcing script sets SELF to its own path.
entries() { grep -E '^[a-z0-9_]+\(\) \{ #' "$SELF" | sed -E 's/^([a-z0-9_]+)\(\) \{ # ?/\1\t/' |
  awk -F'\t' '{ n = $1; gsub("_", "-", n); printf "  %s\t%s\n", n, $2 }'; }
if [ $# -eq 0 ]; then echo "usage: $SELF ENTRY... | all"; entries; exit 0; fi
if [ "$1" = all ]; then set -- $(entries | cut -f1); fi
for e in "$@"; do  # every name checked before anything runs
  if ! entries | cut -f1 | tr -d ' ' | grep -qx -- "$e"; then echo "unknown entry $e"; entries; exit 2; fi
done
for e in "$@"; do echo "== $SELF $e"; "${e//-/_}"; done
