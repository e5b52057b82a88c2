// Go's side of the SideBySide HTTP workload: net/http (a goroutine per connection) serving the same handler as
// the other systems — a blocking 20 ms sleep and a small fixed body. Usage: http_server PORT
// Prints READY once listening; exits by itself after two minutes (every loop of the harness is bounded).
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// The same bytes as HttpWorkloads.Body on the .NET side.
var body = []byte("hello from a blocking handler: it slept 20 ms, as a database call would\n" + strings.Repeat(".", 27) + "\n")

func main() {
	listener, err := net.Listen("tcp", "127.0.0.1:"+os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond)
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body)
	})
	go http.Serve(listener, handler)
	fmt.Println("READY")
	time.Sleep(2 * time.Minute)
}
