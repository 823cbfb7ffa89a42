select
    customer_id,
    customer_unique_id,
    customer_zip_code_prefix as zip_code_prefix,
    md5(customer_city || '|' || customer_state) as city_id
from {{ source('raw', 'olist_customers') }}
