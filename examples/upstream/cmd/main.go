// Command upstream runs the stand-in upstream API for trying the hydration bundles by hand:
//
//	go run ./examples/upstream/cmd -addr 127.0.0.1:8090
//	curl -X PUT 127.0.0.1:8090/users/IDNUMBER1234 -d '{"id":"IDNUMBER1234",...}'
package main

import (
	"flag"
	"log"
	"net/http"

	"intake/examples/upstream"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8090", "listen address")
	flag.Parse()
	log.Printf("stand-in upstream API on http://%s (PUT a path to set what GET answers)", *addr)
	log.Fatal(http.ListenAndServe(*addr, upstream.New()))
}
