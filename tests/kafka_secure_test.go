package tests

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/twmb/franz-go/pkg/kfake"
)

// TestKafkaListenerTLSAndSASL: a broker that speaks only TLS and requires SASL; the listener
// joins and consumes with each mechanism from the INTAKE_KAFKA_* settings, and not with a wrong
// password.
func TestKafkaListenerTLSAndSASL(t *testing.T) {
	pki := newPKI(t)
	pair, err := tls.LoadX509KeyPair(pki.ServerCert, pki.ServerKey)
	require.NoError(t, err)
	broker := startBroker(t, 2, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{pair}}),
		kfake.EnableSASL(), kfake.Superuser("PLAIN", "plain-user", "plain-pw"),
		kfake.Superuser("SCRAM-SHA-256", "scram256-user", "scram256-pw"), kfake.Superuser("SCRAM-SHA-512", "scram512-user", "scram512-pw"))
	s := startDev(t)
	createTeams(t, s, "sg-k")

	caPEM, err := os.ReadFile(pki.CA)
	require.NoError(t, err)
	roots := x509.NewCertPool()
	require.True(t, roots.AppendCertsFromPEM(caPEM))
	w := &kafkago.Writer{Addr: kafkago.TCP(broker.ListenAddrs()...), Topic: usersTopic, AllowAutoTopicCreation: true,
		BatchTimeout: 5 * time.Millisecond, Transport: &kafkago.Transport{TLS: &tls.Config{RootCAs: roots},
			SASL: plain.Mechanism{Username: "plain-user", Password: "plain-pw"}}}
	defer w.Close()

	listen := func(mechanism, user, password string) *server {
		return startServe(t, s, serveOpts{roles: "listeners", env: []string{
			"INTAKE_KAFKA_BROKERS=" + strings.Join(broker.ListenAddrs(), ","), "INTAKE_KAFKA_TLS_CA=" + pki.CA,
			"INTAKE_KAFKA_SASL_MECHANISM=" + mechanism, "INTAKE_KAFKA_SASL_USERNAME=" + user, "INTAKE_KAFKA_SASL_PASSWORD=" + password}})
	}

	t.Run("a wrong password never joins", func(t *testing.T) {
		l := listen("SCRAM-SHA-256", "scram256-user", "wrong-pw-5d1e")
		time.Sleep(5 * time.Second)
		code, msg := l.readyz()
		assert.Equal(t, http.StatusServiceUnavailable, code)
		assert.Contains(t, msg, "Kafka consumer groups not joined yet: intake")
		assert.NotContains(t, l.logs.String(), "wrong-pw-5d1e", "the password is never logged")
		l.kill()
	})

	next := 0
	for _, m := range []struct{ mechanism, user, password string }{
		{"PLAIN", "plain-user", "plain-pw"},
		{"SCRAM-SHA-256", "scram256-user", "scram256-pw"},
		{"SCRAM-SHA-512", "scram512-user", "scram512-pw"},
	} {
		t.Run("consumes over TLS with "+m.mechanism, func(t *testing.T) {
			l := listen(m.mechanism, m.user, m.password)
			l.waitReady(time.Minute)
			from := next
			next += 5
			var msgs []kafkago.Message
			for i := from; i < next; i++ {
				msgs = append(msgs, userRecord(9000+i, "create"))
			}
			require.NoError(t, w.WriteMessages(context.Background(), msgs...))
			for i := from; i < next; i++ {
				id := fmt.Sprintf("k%04d", 9000+i)
				require.Eventually(t, func() bool {
					code, _ := s.request("GET", "/api/v1/entities/users/"+id, nil, true, nil)
					return code == http.StatusOK
				}, time.Minute, 200*time.Millisecond, "user %s consumed with %s", id, m.mechanism)
			}
			require.NoError(t, l.cmd.Process.Signal(os.Interrupt))
			<-l.done
		})
	}
}
