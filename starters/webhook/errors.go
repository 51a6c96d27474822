package webhook

import (
	"errors"
	"io"
	"net/http"

	"github.com/gin-gonic/gin"
)

// ErrorBody is the one error shape of every HTTP answer.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
	Details any    `json:"details"`
}

// Abort answers an error in the one shape and stops the handler chain.
func Abort(c *gin.Context, status int, code, message string, details any) {
	c.Abort()
	c.PureJSON(status, ErrorBody{Error: code, Message: message, Details: details}) // "->" stays readable
}

// ReadBody reads a request body of at most max bytes (*http.MaxBytesError beyond). The rest of
// a body over the limit is read and dropped, up to drainMax bytes, before the caller answers:
// a server that answers and closes while its client still writes resets the connection, and a
// client that meets the reset while writing (Go's among them) reports it instead of the answer.
func ReadBody(c *gin.Context, max int64) ([]byte, error) {
	body := c.Request.Body
	raw, err := io.ReadAll(http.MaxBytesReader(c.Writer, body, max))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		_, _ = io.CopyN(io.Discard, body, drainMax)
	}
	return raw, err
}

// drainMax bounds what ReadBody drops of a body over its limit; past it the client may see the
// reset after all.
const drainMax = 16 << 20
