package store

// StripeOf exposes an entity ID's lock stripe to the tests.
var StripeOf = stripeOf
