// Command generator feeds the big-screen demo (examples/dashboard) with
// made-up but plausible shop traffic: orders, page views and the number of
// shops online, published through edge's admin API (POST /publish/CHANNEL).
//
//	go run ./examples/dashboard/generator                  # 10 minutes at 3 orders/s
//	go run ./examples/dashboard/generator -rate 10 -for 1m
//	go run ./examples/dashboard/generator -orders 50       # 50 orders, then stop
//
// It stops by itself (-for, -orders) or on Ctrl-C. The admin API is on
// loopback by default; with admin_key_file set, pass -key-file.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// weighted picks are drawn by weight: a shop's orders are not uniform
// over countries or products.
type country struct {
	code   string
	weight int
}

var countries = []country{
	{"DE", 30}, {"FR", 18}, {"GB", 16}, {"US", 14}, {"NL", 9}, {"IT", 8}, {"ES", 8},
	{"PL", 6}, {"SE", 5}, {"BE", 4}, {"AT", 4}, {"CH", 3}, {"DK", 2}, {"JP", 2}, {"CA", 2},
}

type product struct {
	name   string
	price  float64
	weight int
}

var products = []product{
	{"Espresso beans 1 kg", 24.90, 20}, {"Pour-over kettle", 49.00, 8}, {"Ceramic mug", 12.50, 18},
	{"Hand grinder", 89.00, 5}, {"Paper filters ×100", 5.90, 15}, {"Cold brew bottle", 29.00, 7},
	{"Milk frother", 39.00, 6}, {"Tasting set", 34.00, 4}, {"Travel tumbler", 22.00, 10},
	{"Decaf blend 500 g", 14.90, 7},
}

var pages = []string{"/", "/shop", "/shop/beans", "/shop/brewing", "/product", "/cart", "/checkout", "/blog"}

func pick[T any](list []T, weight func(T) int) T {
	total := 0
	for _, x := range list {
		total += weight(x)
	}
	n := rand.IntN(total)
	for _, x := range list {
		if n -= weight(x); n < 0 {
			return x
		}
	}
	return list[len(list)-1]
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "generator:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("generator", flag.ContinueOnError)
	admin := fs.String("admin", "http://127.0.0.1:9181", "edge's admin listener")
	keyFile := fs.String("key-file", "", "file holding the admin key (admin_key_file)")
	rate := fs.Float64("rate", 3, "orders per second (page views are about 8× that)")
	dur := fs.Duration("for", 10*time.Minute, "stop after this long")
	maxOrders := fs.Int("orders", 0, "stop after this many orders (0: no limit)")
	quiet := fs.Bool("q", false, "do not print each order")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate <= 0 || *rate > 1000 {
		return fmt.Errorf("-rate must be in (0, 1000]")
	}
	key := ""
	if *keyFile != "" {
		b, err := os.ReadFile(*keyFile)
		if err != nil {
			return err
		}
		key = strings.TrimSpace(string(b))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, *dur)
	defer cancel()

	p := &publisher{base: strings.TrimSuffix(*admin, "/"), key: key, client: &http.Client{Timeout: 5 * time.Second}}
	shops := 120 + rand.IntN(20)
	if err := p.publish(ctx, "shops", map[string]any{"online": shops}); err != nil {
		return err // edge is not there: say so at once
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate / 8)) // one visit per tick
	defer tick.Stop()
	shopTick := time.NewTicker(5 * time.Second)
	defer shopTick.Stop()
	orders, failures := 0, 0
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "generator: stopped after %d orders\n", orders)
			return nil
		case <-shopTick.C:
			shops = max(40, shops+rand.IntN(7)-3)
			p.publish(ctx, "shops", map[string]any{"online": shops})
			continue
		case <-tick.C:
		}
		c := pick(countries, func(c country) int { return c.weight })
		shop := fmt.Sprintf("shop-%03d", 1+rand.IntN(shops))
		err := p.publish(ctx, "visits", map[string]any{"shop": shop, "country": c.code, "path": pages[rand.IntN(len(pages))]})
		if i%8 == 0 {
			pr := pick(products, func(p product) int { return p.weight })
			qty := 1 + rand.IntN(3)*rand.IntN(2)
			order := map[string]any{
				"id": fmt.Sprintf("%d-%04d", time.Now().Unix(), orders), "shop": shop, "country": c.code,
				"product": pr.name, "qty": qty, "total": float64(int(pr.price*float64(qty)*100)) / 100,
			}
			if err == nil {
				err = p.publish(ctx, "orders", order)
			}
			if err == nil {
				orders++
				if !*quiet {
					fmt.Printf("order %s %s %d× %s %.2f\n", order["id"], c.code, qty, pr.name, order["total"])
				}
			}
			if *maxOrders > 0 && orders >= *maxOrders {
				fmt.Fprintf(os.Stderr, "generator: %d orders published\n", orders)
				return nil
			}
		}
		if err != nil && ctx.Err() == nil {
			// edge restarting or reloading: keep going, but not forever.
			if failures++; failures%20 == 1 {
				fmt.Fprintln(os.Stderr, "generator:", err)
			}
			if failures > 600 {
				return fmt.Errorf("giving up after %d failed publishes", failures)
			}
			continue
		}
		failures = 0
	}
}

// publisher posts messages to edge's publish API.
type publisher struct {
	base   string
	key    string
	client *http.Client
}

func (p *publisher) publish(ctx context.Context, channel string, v any) error {
	body, _ := json.Marshal(v)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.base+"/publish/"+channel, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	if p.key != "" {
		req.Header.Set("Authorization", "Bearer "+p.key)
	}
	res, err := p.client.Do(req)
	if err != nil {
		return fmt.Errorf("publish %s: %w", channel, err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusAccepted {
		msg, _ := io.ReadAll(io.LimitReader(res.Body, 512))
		return fmt.Errorf("publish %s: %s: %s", channel, res.Status, bytes.TrimSpace(msg))
	}
	io.Copy(io.Discard, res.Body)
	return nil
}
