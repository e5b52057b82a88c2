// Go's side of the SideBySide rows (run with GOMAXPROCS=1 for the one-thread comparison). Every mode prints one
// JSON line; servers print READY once listening and exit by themselves after two minutes. Loopback only.
//
//	main switch_gosched | switch_chan   1M switches between two goroutines (runtime.Gosched / channel ping-pong)
//	main spawn_join                     100k goroutines that do nothing, waited for
//	main sleep_mem                      100k goroutines each sleeping 1 s: wall, spawn time, bytes per goroutine
//	main timers                         10k goroutines each sleeping a random 0-100 ms (seeded): wall, lateness
//	main server PORT                    echo server, a goroutine per connection
//	main client PORT CLIENTS ROUNDS     echo load: CLIENTS connections, ROUNDS round trips of 64 bytes each
//	main inproc                         the echo server and 100 x 1000 clients in one process
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net"
	"os"
	"runtime"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"
)

const switches = 1_000_000

func emit(fields map[string]any) {
	fields["GOMAXPROCS"] = runtime.GOMAXPROCS(0)
	line, _ := json.Marshal(fields)
	fmt.Println(string(line))
}

// peakRSSKiB is the process's peak resident set so far (getrusage ru_maxrss, KiB on Linux).
func peakRSSKiB() int64 {
	var usage syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &usage)
	return usage.Maxrss
}

// nearestRank returns the value below which fraction of the sorted sample lies.
func nearestRank(sorted []float64, fraction float64) float64 {
	i := int(fraction * float64(len(sorted)))
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func timed(body func()) float64 {
	start := time.Now()
	body()
	return time.Since(start).Seconds()
}

func switchGosched() {
	seconds := timed(func() {
		var done sync.WaitGroup
		for k := 0; k < 2; k++ {
			done.Add(1)
			go func() {
				defer done.Done()
				for i := 0; i < switches/2; i++ {
					runtime.Gosched()
				}
			}()
		}
		done.Wait()
	})
	emit(map[string]any{"bench": "switch_gosched", "N_switches": switches, "seconds": seconds, "switches_per_s": switches / seconds})
}

func switchChan() {
	there, back := make(chan int), make(chan int)
	go func() {
		for v := range there {
			back <- v
		}
	}()
	seconds := timed(func() {
		for i := 0; i < switches/2; i++ {
			there <- i
			<-back
		}
	})
	close(there)
	emit(map[string]any{"bench": "switch_chan_pingpong", "N_switches": switches, "seconds": seconds, "switches_per_s": switches / seconds})
}

func spawnJoin() {
	const n = 100_000
	seconds := timed(func() {
		var done sync.WaitGroup
		done.Add(n)
		for i := 0; i < n; i++ {
			go done.Done()
		}
		done.Wait()
	})
	emit(map[string]any{"bench": "spawn_join_noop", "N": n, "seconds": seconds, "goroutines_per_s": n / seconds})
}

func sleepMem() {
	const n = 100_000
	runtime.GC()
	before := peakRSSKiB()
	var done sync.WaitGroup
	done.Add(n)
	start := time.Now()
	for i := 0; i < n; i++ {
		go func() {
			defer done.Done()
			time.Sleep(time.Second)
		}()
	}
	spawn := time.Since(start).Seconds()
	done.Wait()
	wall := time.Since(start).Seconds()
	after := peakRSSKiB()
	emit(map[string]any{"bench": "sleep1s_100k", "N": n, "wall_s": wall, "spawn_s": spawn, "baseline_maxrss_kb": before,
		"ru_maxrss_kb": after, "bytes_per_goroutine": float64(after-before) * 1024 / n})
}

func timers() {
	const n = 10_000
	rng := rand.New(rand.NewSource(42))
	delays := make([]time.Duration, n)
	var ideal time.Duration
	for i := range delays {
		delays[i] = time.Duration(rng.Float64() * float64(100*time.Millisecond))
		if delays[i] > ideal {
			ideal = delays[i]
		}
	}
	lateness := make([]float64, n)
	wall := timed(func() {
		var done sync.WaitGroup
		done.Add(n)
		for i := 0; i < n; i++ {
			go func(i int) {
				defer done.Done()
				began := time.Now()
				time.Sleep(delays[i])
				lateness[i] = (time.Since(began) - delays[i]).Seconds()
			}(i)
		}
		done.Wait()
	})
	sort.Float64s(lateness)
	emit(map[string]any{"bench": "timers_10k", "N": n, "wall_s": wall, "ideal_s": ideal.Seconds(), "overhead_s": wall - ideal.Seconds(),
		"lateness_ms_p50": nearestRank(lateness, 0.5) * 1e3, "lateness_ms_p99": nearestRank(lateness, 0.99) * 1e3,
		"lateness_ms_max": lateness[n-1] * 1e3})
}

func echo(conn net.Conn) {
	defer conn.Close()
	buffer := make([]byte, 4096)
	for {
		n, err := conn.Read(buffer)
		if err != nil {
			return
		}
		if _, err := conn.Write(buffer[:n]); err != nil {
			return
		}
	}
}

func listen(address string) net.Listener {
	listener, err := net.Listen("tcp", address)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	go func() {
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			go echo(conn)
		}
	}()
	return listener
}

func load(address string, clients, rounds int) map[string]any {
	perClient := make([][]float64, clients)
	message := make([]byte, 64)
	var done sync.WaitGroup
	done.Add(clients)
	seconds := timed(func() {
		for c := 0; c < clients; c++ {
			go func(c int) {
				defer done.Done()
				conn, err := net.Dial("tcp", address)
				if err != nil {
					panic(err)
				}
				defer conn.Close()
				reply := make([]byte, len(message))
				mine := make([]float64, 0, rounds)
				for r := 0; r < rounds; r++ {
					began := time.Now()
					if _, err := conn.Write(message); err != nil {
						panic(err)
					}
					if _, err := io.ReadFull(conn, reply); err != nil {
						panic(err)
					}
					mine = append(mine, time.Since(began).Seconds())
				}
				perClient[c] = mine
			}(c)
		}
		done.Wait()
	})
	var all []float64
	for _, mine := range perClient {
		all = append(all, mine...)
	}
	sort.Float64s(all)
	return map[string]any{"clients": clients, "rounds": rounds, "requests": len(all), "seconds": seconds,
		"req_per_s": float64(len(all)) / seconds, "p50_us": nearestRank(all, 0.5) * 1e6,
		"p99_us": nearestRank(all, 0.99) * 1e6, "max_us": all[len(all)-1] * 1e6}
}

func argInt(i int) int {
	v, err := strconv.Atoi(os.Args[i])
	if err != nil {
		fmt.Fprintln(os.Stderr, "not a number:", os.Args[i])
		os.Exit(2)
	}
	return v
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: main switch_gosched|switch_chan|spawn_join|sleep_mem|timers|server PORT|client PORT CLIENTS ROUNDS|inproc")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "switch_gosched":
		switchGosched()
	case "switch_chan":
		switchChan()
	case "spawn_join":
		spawnJoin()
	case "sleep_mem":
		sleepMem()
	case "timers":
		timers()
	case "server":
		listen("127.0.0.1:" + os.Args[2])
		fmt.Println("READY")
		time.Sleep(2 * time.Minute)
	case "client":
		result := load("127.0.0.1:"+os.Args[2], argInt(3), argInt(4))
		result["bench"] = "echo_client"
		emit(result)
	case "inproc":
		listener := listen("127.0.0.1:0")
		result := load(listener.Addr().String(), 100, 1000)
		listener.Close()
		result["bench"] = "echo_inproc"
		emit(result)
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
