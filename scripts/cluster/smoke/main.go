// A tiny image for the cluster smoke check.
//
//	smoke serve [addr]   HTTP server: "/" answers the pod's hostname, "/burn?ms=N" spins a CPU for N ms
//	smoke get URL        resolve URL's host (cluster DNS) and print the answer; exit 1 on failure
//	smoke load URL SECS  two workers GET URL in a loop for SECS seconds (drives the HPA)
package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"
)

func serve(addr string) {
	host, _ := os.Hostname()
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	http.HandleFunc("/burn", func(w http.ResponseWriter, r *http.Request) {
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		end := time.Now().Add(time.Duration(ms) * time.Millisecond)
		n := 0
		for time.Now().Before(end) {
			n++
		}
		fmt.Fprintf(w, "burned %d ms on %s (%d loops)\n", ms, host, n)
	})
	fmt.Println("listening on", addr)
	if err := http.ListenAndServe(addr, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func get(raw string) {
	u, err := url.Parse(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	addrs, err := net.LookupHost(u.Hostname())
	if err != nil {
		fmt.Fprintln(os.Stderr, "dns:", err)
		os.Exit(1)
	}
	fmt.Printf("%s resolves to %v\n", u.Hostname(), addrs)
	client := http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(raw)
	if err != nil {
		fmt.Fprintln(os.Stderr, "http:", err)
		os.Exit(1)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Printf("HTTP %d: %s", resp.StatusCode, body)
	if resp.StatusCode != 200 {
		os.Exit(1)
	}
}

func load(raw string, secs int) {
	end := time.Now().Add(time.Duration(secs) * time.Second)
	done := make(chan int)
	for w := 0; w < 2; w++ {
		go func() {
			client := http.Client{Timeout: 10 * time.Second}
			n := 0
			for time.Now().Before(end) {
				if resp, err := client.Get(raw); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					n++
				}
			}
			done <- n
		}()
	}
	total := <-done + <-done
	fmt.Printf("%d requests in %d s\n", total, secs)
}

func main() {
	if len(os.Args) >= 4 && os.Args[1] == "load" {
		secs, _ := strconv.Atoi(os.Args[3])
		load(os.Args[2], secs)
		return
	}
	if len(os.Args) >= 3 && os.Args[1] == "get" {
		get(os.Args[2])
		return
	}
	addr := ":8080"
	if len(os.Args) >= 3 {
		addr = os.Args[2]
	}
	serve(addr)
}
