# Renders a trivy-operator VulnerabilityReport (bare, or in its {verb, operatorObject} wrapper)
# as Slack Block Kit blocks (a JSON array; the Slack action adds the title). Postee's `postee.trivyoperator.slack`.
package hooker.trivyoperator.slack

import data.hooker.lib.render
import data.hooker.lib.trivyoperator
import rego.v1

title := trivyoperator.title

result := render.slack_blocks(trivyoperator.card, 20)

result_severity := trivyoperator.level

result_finding := trivyoperator.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := trivyoperator.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.slack"
