select
    p.product_id,
    p.product_category_name as category_name,
    coalesce(t.product_category_name_english, p.product_category_name, 'unknown') as category_name_english
from {{ ref('products') }} p
left join {{ ref('category_translation') }} t
    on t.product_category_name = p.product_category_name
