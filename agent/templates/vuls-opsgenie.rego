# Aqua image-scan report as an OpsGenie alert (Postee's `postee.vuls.opsgenie`).
package hooker.vuls.opsgenie

import rego.v1

title := input.image

result := {
	"description": sprintf("%s vulnerability scan report", [input.image]),
	"alias": input.image,
}
