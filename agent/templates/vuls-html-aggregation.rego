# Aggregates `hooker.vuls.html` reports: one HTML page listing every scanned image.
package hooker.vuls.html.aggregation

import rego.v1

title := "Vulnerability scan report"

result := concat("", [sprintf("<h1>%s</h1>%s", [item.title, as_text(item.description)]) | some item in input])

url := concat("\n", [item.url | some item in input; item.url])

as_text(d) := d if is_string(d)
else := json.marshal(d)
