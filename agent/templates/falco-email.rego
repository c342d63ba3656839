# Renders a Falco alert (Falco's JSON output)
# as HTML for e-mail (the same as the html template).
package hooker.falco.email

import data.hooker.lib.render
import data.hooker.lib.falco
import rego.v1

title := falco.title

result := render.html_body(falco.card, 100)

result_severity := falco.level

result_finding := falco.finding

# The key the paging and ticketing actions de-duplicate on.
result_dedup_key := falco.finding

result_owners := input.application_scope_owners if is_array(input.application_scope_owners)

aggregation_pkg := "hooker.aggregate.html"
