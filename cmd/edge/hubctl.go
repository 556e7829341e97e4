package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"edge/hub"
)

// The hub's control verbs: disconnect, unsubscribe and connections. They
// talk to the admin listener of the running edge (POST /hub/disconnect,
// POST /hub/unsubscribe, GET /hub/connections); without one, disconnect
// and unsubscribe go straight into Redis, which carries them to every node.

// selectorFlags are the flags that select connections.
func selectorFlags(fs *flag.FlagSet, o *hub.Control) {
	fs.StringVar(&o.Sub, "sub", "", "the user's connections (the token's sub)")
	fs.StringVar(&o.Conn, "conn", "", "one connection, by the id `edge connections` shows")
	fs.BoolVar(&o.All, "all", false, "every connection")
}

func cmdDisconnect(args []string, stdout, stderr io.Writer) error {
	var o hub.Control
	fs, cfgPath := newFlags("disconnect", "disconnect [-config FILE] (-sub USER | -conn ID | -channel NAME | -all) [-code N] [-reason TEXT] [-no-reconnect]", stderr)
	selectorFlags(fs, &o)
	fs.StringVar(&o.Channel, "channel", "", "the connections subscribed to this channel")
	fs.IntVar(&o.Code, "code", hub.DisconnectCode, "close code, 4000-4999")
	fs.StringVar(&o.Reason, "reason", "", "close reason the client sees (default \"disconnected\")")
	noReconnect := fs.Bool("no-reconnect", false, "tell client.js not to reconnect")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	if *noReconnect {
		f := false
		o.Reconnect = &f
	}
	o.Op = "disconnect"
	return sendControl(*cfgPath, o, stdout, stderr)
}

func cmdUnsubscribe(args []string, stdout, stderr io.Writer) error {
	var o hub.Control
	fs, cfgPath := newFlags("unsubscribe", "unsubscribe [-config FILE] -channel NAME (-sub USER | -conn ID | -all)", stderr)
	selectorFlags(fs, &o)
	fs.StringVar(&o.Channel, "channel", "", "the channel to take them out of")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	o.Op = "unsubscribe"
	return sendControl(*cfgPath, o, stdout, stderr)
}

// sendControl sends an order through the admin listener, or Redis.
func sendControl(cfgPath string, o hub.Control, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(cfgPath, stderr)
	if err != nil {
		return err
	}
	body, _ := json.Marshal(o)
	if cfg.Admin != "" {
		res, err := adminRequest(cfg, http.MethodPost, "/hub/"+o.Op, body)
		if err == nil {
			fmt.Fprint(stdout, res)
			return nil
		}
		var ae *adminError
		if errors.As(err, &ae) {
			return fmt.Errorf("%s refused (%d): %s", o.Op, ae.status, strings.TrimSpace(ae.body))
		}
		return fmt.Errorf("no running edge answers on the admin listener %s (%v)", cfg.Admin, err)
	}
	if cfg.Redis == nil {
		return fmt.Errorf("%s needs the admin listener or redis (url or sentinel) in the configuration", o.Op)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hub.ControlRedis(ctx, cfg.Redis, o); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s sent via redis\n", o.Op)
	return nil
}

func cmdConnections(args []string, stdout, stderr io.Writer) error {
	fs, cfgPath := newFlags("connections", "connections [-config FILE] [-sub USER]", stderr)
	sub := fs.String("sub", "", "only this user's connections (the token's sub)")
	if done, err := parseFlags(fs, args); done {
		return err
	}
	cfg, err := loadConfig(*cfgPath, stderr)
	if err != nil {
		return err
	}
	if cfg.Admin == "" {
		return errors.New("connections needs the admin listener in the configuration")
	}
	res, err := adminRequest(cfg, http.MethodGet, "/hub/connections?sub="+url.QueryEscape(*sub), nil)
	if err != nil {
		var ae *adminError
		if errors.As(err, &ae) {
			return fmt.Errorf("connections refused (%d): %s", ae.status, strings.TrimSpace(ae.body))
		}
		return fmt.Errorf("no running edge answers on the admin listener %s (%v)", cfg.Admin, err)
	}
	fmt.Fprint(stdout, res)
	return nil
}
