// Command ferretdb runs an embedded FerretDB on a TCP address until SIGTERM, on PostgreSQL
// (-postgresql-url) or on SQLite files (-data), and on a TLS address as well with -listen-tls
// (flags named as FerretDB's own; a -listen-tls-ca-file makes client certificates required).
//
// FerretDB's own cmd/ferretdb cannot be `go install`ed (its version file is not in the
// module), so the local runner builds this small wrapper around the embeddable package.
package main

import (
	"context"
	"flag"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/FerretDB/FerretDB/ferretdb"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:27017", "TCP address to listen on")
	postgresqlURL := flag.String("postgresql-url", "", "PostgreSQL backend, e.g. postgres://user@127.0.0.1:5432/postgres")
	dataDir := flag.String("data", "", "absolute directory for the SQLite files (SQLite backend)")
	listenTLS := flag.String("listen-tls", "", "TLS address to listen on as well")
	tlsCertFile := flag.String("listen-tls-cert-file", "", "server certificate (PEM) for -listen-tls")
	tlsKeyFile := flag.String("listen-tls-key-file", "", "its private key (PEM)")
	tlsCAFile := flag.String("listen-tls-ca-file", "", "CA (PEM) client certificates must chain to; requires them")
	flag.Parse()
	if (*postgresqlURL == "") == (*dataDir == "") {
		log.Fatal("exactly one of -postgresql-url and -data is required")
	}
	if *listenTLS != "" && (*tlsCertFile == "" || *tlsKeyFile == "") {
		log.Fatal("-listen-tls needs -listen-tls-cert-file and -listen-tls-key-file")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	config := &ferretdb.Config{Listener: ferretdb.ListenerConfig{
		TCP:         *listen,
		TLS:         *listenTLS,
		TLSCertFile: *tlsCertFile,
		TLSKeyFile:  *tlsKeyFile,
		TLSCAFile:   *tlsCAFile,
	}}
	where := ""
	if *postgresqlURL != "" {
		config.Handler = "postgresql"
		config.PostgreSQLURL = *postgresqlURL
		where = "PostgreSQL " + *postgresqlURL
	} else {
		config.Handler = "sqlite"
		config.SQLiteURL = "file:" + *dataDir + "/"
		where = "SQLite files in " + *dataDir
	}
	f, err := ferretdb.New(config)
	if err != nil {
		log.Fatal(err)
	}
	if *listenTLS != "" {
		log.Printf("ferretdb listening on TLS %s as well", *listenTLS)
	}
	log.Printf("ferretdb listening on %s, data in %s", *listen, where)
	f.Run(ctx)
}
