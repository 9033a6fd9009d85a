// Package conversation is the domain of liminald: the events of a durable
// conversation, the state their replay gives, the write rules that decide
// whether a request appends an event, and the redelivery decision.
//
// The package is pure: it does no I/O and reads no clock. Callers pass in
// what is known (a message's state, the conversation's next seq, a stored
// event) and get back what to append, or a typed error.
//
// Every rule is O(1) per message: a message's state carries the highest
// completed step, its latest event and the seq of its latest start, so no
// decision scans the steps or the events of a conversation.
package conversation
