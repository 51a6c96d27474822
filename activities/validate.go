package activities

import (
	"context"
	"fmt"

	"intake"
)

// Validate checks each mapped entity's properties against its template. "required" is judged
// in Upsert, on the entity as it will be stored (for merge: the stored entity plus the mapping).
func (a *Activities) Validate(_ context.Context, changes []intake.EntityChange) ([]intake.EntityChange, error) {
	for i := range changes {
		c := &changes[i]
		if c.Failed() || c.Operation == intake.OperationDelete {
			continue
		}
		ct := a.Catalog.Template(c.Template)
		if ct == nil {
			c.Fail(intake.ErrValidation, fmt.Sprintf("template %q does not exist", c.Template))
			continue
		}
		if err := ct.Validate(c.Properties, false); err != nil {
			c.Fail(intake.ErrValidation, err.Error())
		}
	}
	return changes, nil
}
