#!/usr/bin/env bash
# Compiles src/ into dist/ (tsconfig.build.json), so that the CLI starts without transpiling TypeScript, and
# bundles the compiled workflows into dist/workflow-bundle.js, so that the engine starts without webpack.
# bin/livemerge.cjs runs dist/ only while its stamp (dist/.built, dated when this build started) is at least
# as new as every file under src/ (bin/dist-fresh.cjs); otherwise it runs the sources through tsx. The new
# tree is built beside the old one and swapped in, so a CLI starting meanwhile sees one or the other.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s.%N)
rm -rf dist.new dist.old
trap 'rm -rf dist.new' EXIT
node_modules/.bin/tsc -p tsconfig.build.json --outDir dist.new
# The compiled engine's workflow bundle (src/workers/workflow-bundle.ts): no webpack when it starts.
node -e 'require("./dist.new/workers/workflow-bundle.js").writeWorkflowBundle("dist.new/workflow-bundle.js").catch((e) => { console.error(e); process.exit(1); })'
touch -d "@$start" dist.new/.built
if [ -d dist ]; then mv dist dist.old; fi
mv dist.new dist
rm -rf dist.old
