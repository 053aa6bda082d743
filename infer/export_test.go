package infer

// BoundRuns is the number of runs s made through its IoBinding (for
// infer_test's tests).
func BoundRuns(s *Session) int { return s.boundRuns }
