package webhook_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"intake/starters/webhook"
)

// A client that writes a whole body over the limit before it reads (as Go's client does when
// the answer comes late) gets the answer: the server reads and drops the rest of the body before
// it answers and closes. Without that, the server stops reading, and once it closes, the client's
// write meets a reset, which discards the answer it has not read yet.
func TestReadBodyOverTheLimitIsAnswered(t *testing.T) {
	gin.SetMode(gin.ReleaseMode)
	r := gin.New()
	r.PUT("/", func(c *gin.Context) {
		body, err := webhook.ReadBody(c, 64<<10)
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			webhook.Abort(c, http.StatusRequestEntityTooLarge, "body_too_large", "body is over the limit", nil)
			return
		}
		c.String(http.StatusOK, "%d", len(body))
	})
	srv := httptest.NewServer(r)
	defer srv.Close()

	put := func(size int) (*http.Response, []byte) {
		t.Helper()
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetDeadline(time.Now().Add(30*time.Second)))
		_, err = fmt.Fprintf(conn, "PUT / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size)
		require.NoError(t, err)
		_, err = conn.Write(bytes.Repeat([]byte("x"), size))
		require.NoError(t, err, "the whole body is written")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		return resp, body
	}
	resp, body := put(12 << 20) // more than loopback's socket buffers hold
	assert.Equal(t, http.StatusRequestEntityTooLarge, resp.StatusCode)
	assert.Contains(t, string(body), "body_too_large")

	resp, body = put(1000)
	assert.Equal(t, http.StatusOK, resp.StatusCode, "a body under the limit is read whole")
	assert.Equal(t, "1000", string(body))
}
