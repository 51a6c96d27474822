package webhook

import "github.com/gin-gonic/gin"

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
