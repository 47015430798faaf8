#!/usr/bin/env bash
# Builds the libFuzzer target (STUN decoder + TURN state machine) with -sanitize=fuzzer,address
# and runs it. Usage: scripts/fuzz.sh [RUNS]   (default 200000; 0 = until stopped)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-200000}
scratch=.build-fuzz
swift build -c release --package-path Fuzz --scratch-path "$scratch" \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld >&2
bin=$(swift build -c release --package-path Fuzz --scratch-path "$scratch" -Xswiftc -sanitize=fuzzer,address -Xswiftc -use-ld=lld --show-bin-path)/fz-fuzz-turn
corpus=$(mktemp -d)
trap 'rm -rf "$corpus"' EXIT
# Seed with the RFC 5769 vectors (decoder mode: first byte even).
for f in Tests/STUNTests/Vectors/*; do
    [[ -f $f ]] || continue
    { printf '\x00'; python3 -c "import sys,binascii,re; t=open(sys.argv[1]).read(); h=re.sub(r'[^0-9a-fA-F]','',t); sys.stdout.buffer.write(binascii.unhexlify(h) if len(h)%2==0 else b'')" "$f"; } > "$corpus/$(basename "$f")" || true
done
"$bin" -runs="$runs" -max_len=2048 -rss_limit_mb=4096 -print_final_stats=1 "$corpus" 2>&1 | tail -n 25
