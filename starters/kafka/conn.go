package kafka

import (
	"crypto/tls"
	"fmt"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// Conn is how the listener reaches the brokers: TLS (nil: plaintext) and SASL (nil: none).
type Conn struct {
	TLS  *tls.Config
	SASL sasl.Mechanism
}

// Mechanism builds a SASL mechanism by its Kafka name: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512
// ("" or "none": no SASL).
func Mechanism(name, user, password string) (sasl.Mechanism, error) {
	switch strings.ToUpper(name) {
	case "", "NONE":
		return nil, nil
	case "PLAIN":
		return plain.Mechanism{Username: user, Password: password}, nil
	case "SCRAM-SHA-256":
		return scram.Mechanism(scram.SHA256, user, password)
	case "SCRAM-SHA-512":
		return scram.Mechanism(scram.SHA512, user, password)
	}
	return nil, fmt.Errorf("SASL mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", name)
}

func (c Conn) dialer() *kafkago.Dialer {
	return &kafkago.Dialer{Timeout: 10 * time.Second, DualStack: true, TLS: c.TLS, SASLMechanism: c.SASL}
}

func (c Conn) transport() *kafkago.Transport {
	return &kafkago.Transport{TLS: c.TLS, SASL: c.SASL, IdleTimeout: 30 * time.Second}
}

// client is an admin client for offsets and metadata, over one transport per listener.
func (l *Listener) client() *kafkago.Client {
	l.transportOnce.Do(func() { l.transport = l.Conn.transport() })
	return &kafkago.Client{Addr: kafkago.TCP(l.Brokers...), Transport: l.transport, Timeout: 10 * time.Second}
}
