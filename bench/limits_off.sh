# Sourced by bench scripts: limits_off BIN prints the flags that turn every limit of
# that Bavard build off (only those the build knows, so older builds can be measured).
limits_off() { # BIN
  local help flags="--rate-per-second 0"
  help=$("$1" --help 2>/dev/null)
  [[ $help != *--api-rate-per-second* ]] || flags+=" --api-rate-per-second 0"
  [[ $help != *--user-rate-per-second* ]] || flags+=" --user-rate-per-second 0"
  [[ $help != *--max-connections-per-ip* ]] || flags+=" --max-connections-per-ip 0"
  echo "$flags"
}
