#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver, etcd) from Go modules, because the machines
# reach only the Go module proxy: no prebuilt binaries can be downloaded.
#
#   build-envtest.sh <out-dir> <kubernetes-version> <etcd-version>
#
# The binaries land in <out-dir>; a build that already produced both is not repeated.
set -euo pipefail

out=${1:?out dir}
k8s=${2:?kubernetes version, e.g. v1.37.2}
etcd=${3:?etcd version, e.g. v3.6.6}
minor=v0.${k8s#v1.}

mkdir -p "$out"
out=$(cd "$out" && pwd)
if [[ -x $out/kube-apiserver && -x $out/etcd ]]; then
  echo "envtest binaries already in $out"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0

echo ">> building etcd $etcd (about 30 s)"
mkdir -p "$work/etcd"
cat >"$work/etcd/main.go" <<'GO'
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
(cd "$work/etcd" && go mod init envtest/etcd >/dev/null 2>&1 &&
  go get "go.etcd.io/etcd/server/v3@$etcd" >/dev/null &&
  go mod tidy >/dev/null && go build -trimpath -o "$out/etcd.tmp" . && mv "$out/etcd.tmp" "$out/etcd")

echo ">> building kube-apiserver $k8s (about 4 min on 2 cores)"
mkdir -p "$work/k8s"
cd "$work/k8s"
go mod init envtest/kube >/dev/null 2>&1
go mod download -json "k8s.io/kubernetes@$k8s" >"$work/k8s.json"
gomod=$(sed -n 's/.*"GoMod": "\(.*\)",/\1/p' "$work/k8s.json")
# Every staging replace of the kubernetes module becomes the published k8s.io/* module.
{
  echo "require k8s.io/kubernetes $k8s"
  echo "replace ("
  sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/k8s.io/.*#\t\1 => \1 '"$minor"'#p' "$gomod"
  echo ")"
} >>go.mod
cat >tools.go <<'GO'
//go:build tools

package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
GO
go mod tidy >/dev/null
go build -trimpath -ldflags "-X k8s.io/component-base/version.gitVersion=$k8s -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${k8s#v1.}" \
  -o "$out/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
mv "$out/kube-apiserver.tmp" "$out/kube-apiserver"
echo ">> envtest binaries in $out"
