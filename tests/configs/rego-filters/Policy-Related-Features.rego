package postee

import future.keywords.in

default allow = false

allow {
	input.vulnerability_summary.critical > 0
}
