select
    c.customer_id,
    c.customer_unique_id,
    c.zip_code_prefix,
    ci.city,
    ci.state
from {{ ref('customers') }} c
left join {{ ref('cities') }} ci on ci.city_id = c.city_id
