#!/usr/bin/env bash
# The main job: builds ikv and runs the end-to-end demo on a local directory as the bucket
# (./demo-bucket). With IKV_DEMO_S3=1 it runs on the LocalStack S3 emulator instead
# (installed and started by localstack/localstack.sh). IKV_DEMO_DOCUMENTS sets the data size.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
documents=${IKV_DEMO_DOCUMENTS:-200000}

cargo build --release --locked -p ikv-cli
bin=${CARGO_TARGET_DIR:-target}/release/ikv

if [ "${IKV_DEMO_S3:-0}" = 1 ]; then
  localstack/localstack.sh start
  localstack/localstack.sh bucket ikv-demo
  export AWS_ENDPOINT_URL=http://127.0.0.1:4566 AWS_REGION=us-east-1
  export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
  url=s3://ikv-demo/demo
else
  mkdir -p demo-bucket
  url="file://$PWD/demo-bucket"
fi
"$bin" --storage-url "$url" demo --documents "$documents"
