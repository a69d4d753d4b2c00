// Command etcd runs an etcd server. etcd v3.7 publishes no root module with a
// main package, so the local cluster builds this one.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
